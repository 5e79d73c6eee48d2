"""What the experiments measure: the utility of a defense (accuracy, L1 change, CMI) and feature distances of
reconstructions to private images (with the attacks: Acc@1/Acc@5 and delta_eval/delta_face)."""
from .distances import centroid_distance, knn_distance
from .utility import utility_metrics

__all__ = ["utility_metrics", "knn_distance", "centroid_distance"]
