//! A library built against an SDK this cloudattach does not speak: its root module has the
//! right name but says cloudattach-sdk 0.0.9 (and an older layout).

// The root module header is a `no_mangle` static built with abi_stable's unsafe constructor.
#![allow(unsafe_code)]

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RString;
use abi_stable::{StableAbi, declare_root_module_statics};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OldModuleRef)))]
pub struct OldModule {
    #[sabi(last_prefix_field)]
    pub manifest: extern "C" fn() -> RString,
}

impl RootModule for OldModuleRef {
    declare_root_module_statics! {OldModuleRef}
    const BASE_NAME: &'static str = "cloudattach_plugin";
    const NAME: &'static str = "cloudattach_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.0.9");
}

extern "C" fn manifest() -> RString {
    r#"{"id":"old-plugin","name":"Old","version":"0.0.9","environments":["public"],"min_site_version":"2111"}"#.into()
}

fn module() -> OldModuleRef {
    OldModule { manifest }.leak_into_prefix()
}

extern "C" fn constructor() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(module)
}

#[unsafe(no_mangle)]
pub static _1as_0lib_1header_0root_bmodule_bloader: LibHeader =
    unsafe { LibHeader::from_constructor::<OldModuleRef>(constructor, CheckTypeLayout::Yes) };
