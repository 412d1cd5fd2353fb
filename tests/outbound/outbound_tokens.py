"""The operator token of this area's gateways (a module of its own: test files cannot import a
conftest by name when the whole suite runs, every folder has one)."""

ADMIN = "ops:control:outbound-test-operator-secret"
