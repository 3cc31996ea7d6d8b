"""Does synthetic data make a diagnosis classifier fairer? The fairness stage.

``cohort`` loads the records of one fixed real split (and the synthetic ones) after checking
that nothing leaks; ``arms`` holds the arms, each one object that builds its training set
(``threshold`` post-processes the reference arm's scores instead); ``classifier``
holds the networks and the training loop; ``fairness`` (the stage) runs every arm with the same
seeds and writes the fairness report, with the group metrics of :mod:`cardiofair.metrics.group_metrics`.
"""
