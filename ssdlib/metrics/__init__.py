"""What the experiments measure: the utility of a defense (accuracy, L1 change, CMI), feature distances of
reconstructions to private images, the attacks' metrics (Acc@1/Acc@5 and delta_eval/delta_face) and the quality of
the attacker's prior."""
from .distances import knn_distance, nearest_class_distance, nearest_distance
from .utility import utility_metrics

__all__ = ["utility_metrics", "knn_distance", "nearest_distance", "nearest_class_distance"]
