"""Does synthetic data make a diagnosis classifier fairer? The downstream experiments.

``arms`` builds each experiment arm's training set from one fixed real split (no torch);
``classifier`` holds the networks and the training loop; ``experiment`` runs every arm with the
same seeds and writes the fairness report.
"""
