"""What the erasers share: losses, saliency masks, the dynamic mask, null spaces, the closed-form solver,
trajectory banks, prompt augmentation, attention recording, training data."""
