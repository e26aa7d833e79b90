"""chatledger: event-sourced persistence for AI chat history."""
