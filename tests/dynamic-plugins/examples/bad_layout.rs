//! A library whose root module has the right name and SDK version but another layout (a
//! modified SDK): the loader must refuse it with a layout mismatch.

// The root module header is a `no_mangle` static built with abi_stable's unsafe constructor.
#![allow(unsafe_code)]

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::{StableAbi, declare_root_module_statics};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SkewedModuleRef)))]
pub struct SkewedModule {
    #[sabi(last_prefix_field)]
    pub manifest: extern "C" fn() -> u64,
}

impl RootModule for SkewedModuleRef {
    declare_root_module_statics! {SkewedModuleRef}
    const BASE_NAME: &'static str = "cloudattach_plugin";
    const NAME: &'static str = "cloudattach_plugin";
    const VERSION_STRINGS: VersionStrings =
        VersionStrings::new(cloudattach_sdk::dynamic::PROTOCOL_VERSION);
}

extern "C" fn manifest() -> u64 {
    7
}

fn module() -> SkewedModuleRef {
    SkewedModule { manifest }.leak_into_prefix()
}

extern "C" fn constructor() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(module)
}

#[unsafe(no_mangle)]
pub static _1as_0lib_1header_0root_bmodule_bloader: LibHeader =
    unsafe { LibHeader::from_constructor::<SkewedModuleRef>(constructor, CheckTypeLayout::Yes) };
