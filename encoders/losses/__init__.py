"""Distillation losses, one file each."""
