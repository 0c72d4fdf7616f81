//! user_agent
