//! Against bots and floods: fixed-window rate limits, proof-of-work challenges, and what a
//! drop asks of its buyers and how much of it one address may take.

pub mod challenge;
pub mod fairness;
pub mod limiter;
