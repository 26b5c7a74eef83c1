"""Pipeline C: memorization taxonomy (Prashanth et al. 2024, "Recite, Reconstruct, Recollect")."""
