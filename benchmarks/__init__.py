"""Benchmarks of lr_callbacks on sample models: overhead, finder quality, watchdog recovery, fine-tuning."""
