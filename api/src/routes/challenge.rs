use poem_openapi::{OpenApi, payload::Json};

use super::ApiTags;
use crate::{
    abuse::challenge::{self, Challenge},
    http::error::ApiResult,
    state::AppState,
};

pub struct ChallengeApi {
    pub state: AppState,
}

#[OpenApi(prefix_path = "/api", tag = "ApiTags::Auth")]
impl ChallengeApi {
    /// A proof-of-work challenge
    ///
    /// A signed ALTCHA challenge (PoW v2, `PBKDF2/SHA-256`), for a sign-up when the store
    /// asks for one (`ALTCHA_ON_SIGNUP`) and a reserve of a drop with `requireChallenge`.
    /// Find the first counter *n* whose PBKDF2 key (password = nonce bytes + *n* as 4
    /// big-endian bytes, the challenge's salt, `cost` iterations, `keyLength` bytes) starts
    /// with `keyPrefix`, and send `base64(JSON {challenge, solution: {counter, derivedKey}})`
    /// in `X-Altcha` (the ALTCHA widget does all of this). Each challenge is good for one
    /// request until `expiresAt`.
    #[oai(path = "/challenge", method = "get", operation_id = "getChallenge")]
    async fn challenge(&self) -> ApiResult<Json<Challenge>> {
        Ok(Json(challenge::issue(&self.state.settings.abuse)?))
    }
}
