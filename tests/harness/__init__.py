"""Test harnesses that run real daemons (a throwaway Slurm controller and nodes)."""
