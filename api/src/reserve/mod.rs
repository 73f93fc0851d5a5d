//! The hot path of a drop: reserves arriving together are one statement per drop (group
//! commit), and the reserve attempts counted for the drop's demand figures.

pub mod batch;
pub mod demand;
