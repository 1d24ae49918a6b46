//! Placeholder: the HTTP component against hyper-util's server and axum::serve (being written).
fn main() {}
