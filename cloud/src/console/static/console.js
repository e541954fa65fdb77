// cloudattach admin center: refreshes the results of running actions on a device page until
// they are final. No other script runs on the console.
(function () {
  "use strict";
  function poll(el, delay) {
    var id = el.getAttribute("data-action");
    setTimeout(function () {
      fetch("/admin/actions/" + encodeURIComponent(id), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var t = document.createElement("template");
          t.innerHTML = html.trim();
          var fresh = t.content.querySelector(".action-result");
          if (!fresh) { return; }
          el.replaceWith(fresh);
          if (fresh.getAttribute("data-final") !== "true") { poll(fresh, Math.min(delay * 1.5, 5000)); }
        })
        .catch(function () { poll(el, 5000); });
    }, delay);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('.action-result[data-final="false"]').forEach(function (el) { poll(el, 1000); });
  });
})();
