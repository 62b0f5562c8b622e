//! What `/readyz` asks of the backend beyond its database: whether the
//! broker answers, and how far the results projector is behind.

use kanade_core::names::STREAM_RESULTS;

use super::core::Backend;
use super::error::BackendError;
use super::projectors::RESULTS_CONSUMER;

impl Backend {
    /// Results in the `RESULTS` stream the projector has not yet stored
    /// and acknowledged; `None` when the transport cannot tell.
    ///
    /// # Errors
    /// The broker did not answer, or the projector's consumer does not
    /// exist yet (the backend is not running its projectors).
    pub async fn results_lag(&self) -> Result<Option<u64>, BackendError> {
        Ok(self
            .log
            .consumer_pending(STREAM_RESULTS, RESULTS_CONSUMER)
            .await?)
    }

    /// Whether the broker answers: reads the `RESULTS` stream's state.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn broker_answers(&self) -> Result<(), BackendError> {
        self.log.stream_info(STREAM_RESULTS).await?;
        Ok(())
    }
}
