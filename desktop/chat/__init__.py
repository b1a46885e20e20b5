"""The chat screen: the message list, the composer and the per-conversation settings."""
