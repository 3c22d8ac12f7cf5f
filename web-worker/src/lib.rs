//! distributivecom-web-worker (being written).
