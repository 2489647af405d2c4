"""Evidence to occupancy probabilities: geometry only, or the temporal-attention network."""
