//! One request to the daemon, for the commands that are its clients.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::CliError;
use crate::ipc::client::Client;
use crate::ipc::protocol::{Request, ResponseEnvelope};
use crate::paths::Paths;

/// Sends `request` on a fresh connection and waits at most `timeout` for its response.
pub fn call(
    paths: &Paths,
    request: Request,
    timeout: Duration,
) -> Result<ResponseEnvelope, CliError> {
    let socket = paths.checked_socket()?;
    let mut client = Client::connect(&socket, &paths.daemon_log(), timeout)?;
    Ok(client.call(request)?)
}

/// The typed payload of a successful response; a refusal becomes [`CliError::Refused`].
pub fn payload<T: DeserializeOwned>(response: ResponseEnvelope) -> Result<T, CliError> {
    if !response.ok {
        return Err(CliError::Refused {
            code: response.code,
            message: response.message,
        });
    }
    serde_json::from_value(response.payload).map_err(|e| {
        CliError::Daemon(format!(
            "the daemon's reply has an unexpected shape ({e}); is the daemon the same version as this CLI?"
        ))
    })
}
