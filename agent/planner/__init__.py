"""Planner: turns policy decisions into ordered transactions against the real protocol ABIs."""
