"""Distillation of the conversational student: config, data, teachers, losses, trainer."""
