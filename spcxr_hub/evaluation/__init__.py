"""Evaluation: predictions over a task's records, the task's metrics, and the plots beside them."""
