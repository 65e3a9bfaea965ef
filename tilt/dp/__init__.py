"""The DP engine: exact optima and measures on acyclic rollout spaces, without enumeration."""
