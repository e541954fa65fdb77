//! `cloud serve`: the local cloud tenant service.

use crate::{Failure, Outcome, input};
use cloudattach_cloud::ServeOptions;

pub fn serve(opts: ServeOptions) -> Outcome {
    opts.validate().map_err(input)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    runtime
        .block_on(cloudattach_cloud::serve(opts))
        .map_err(|e| match e {
            cloudattach_cloud::CloudError::InvalidOption(m) => Failure::Input(m),
            e @ cloudattach_cloud::CloudError::UnsupportedData(_) => Failure::Input(e.to_string()),
            other => Failure::Runtime(other.to_string()),
        })
}
