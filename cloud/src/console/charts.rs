//! Placeholder until the charts land.
pub(crate) fn funnel(stages: &[(&str, u64)]) -> String {
    let _ = stages;
    "<svg role=\"img\" aria-label=\"funnel\"></svg>".into()
}
pub(crate) fn gauge(label: &str, score: Option<f64>) -> String {
    let _ = (label, score);
    "<svg role=\"img\" aria-label=\"gauge\"></svg>".into()
}
pub(crate) fn bars(title: &str, items: &[(&str, u64)]) -> String {
    let _ = (title, items);
    "<svg role=\"img\" aria-label=\"bars\"></svg>".into()
}
