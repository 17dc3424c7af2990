"""Teacher knowledge: the soft-label format (format.py, its one owner) and what the loop asks
for each batch (teacher.py: stored soft labels and features, or the teacher run online)."""
