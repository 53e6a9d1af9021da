"""Operating the daemon: metrics and health endpoints, the pause switch, notifications wiring,
the start-up check. Composition-level code: it may import every stage; no stage imports it."""
