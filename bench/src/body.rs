//! The timed body every target's messages carry, `<send micros>:<padding>`:
//! each receiver reads its sender's send time from it (there is no clock
//! to sync, sender and receiver are one process).

/// The send time a sender wrote at the start of a body (`<micros>:<padding>`).
pub fn body_sent_us(body: &str) -> Option<u64> {
    let digits = body.split(':').next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_send_time() {
        assert_eq!(body_sent_us("12345:xxxx"), Some(12345));
        assert_eq!(body_sent_us("hello"), None);
    }
}
