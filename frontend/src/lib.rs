//! distributivecom-frontend (being written).
