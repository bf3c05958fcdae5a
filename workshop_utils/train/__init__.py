"""Training: prompts become labelled batches (collators), the loss, the Trainer set-up with the seed's
TrainingArguments corrected for transformers 5, the memory estimator, schedules, troubleshooting
callbacks, tracking, and the GPU fast path (fastpath/)."""
