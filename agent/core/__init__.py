"""Foundation shared by every pipeline stage: errors, observation model, units, ABIs, JSON-RPC, anvil."""
