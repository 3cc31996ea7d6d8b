"""Does synthetic data make a diagnosis classifier fairer? The fairness stage.

``arms`` builds each arm's training set from one fixed real split (no torch); ``classifier``
holds the networks and the training loop; ``fairness`` (the stage) runs every arm with the same
seeds and writes the fairness report, with the group metrics of :mod:`cardiofair.metrics.group_metrics`.
"""
