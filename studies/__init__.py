"""Study files bundled with sparsearch (``sparsearch run quickstart`` finds them by name)."""
