//! Against bots and floods: fixed-window rate limits, proof-of-work challenges, what a drop
//! asks of its buyers and how much of it one address may take, and the budget of live
//! sockets.

pub mod challenge;
pub mod fairness;
pub mod limiter;
pub mod live_gate;
