"""The quality and compliance gate: rules, policy, verdicts and corpus figures."""
