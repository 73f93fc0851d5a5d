//! This worker process: what it is doing ([`activity`]: its jobs and sends, counted for the
//! console and `/metrics`) and what the operators want of it ([`controls`]: paused queues,
//! quiet). The runtime and the jobs share both; the console's engine (`ops`) reports and
//! sets them.

pub mod activity;
pub mod controls;
