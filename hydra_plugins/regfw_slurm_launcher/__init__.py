"""regfw's Slurm launcher: hydra-submitit-launcher's, recording the jobs Slurm stops."""
