"""Ad-hoc (not in the repo): the CIFAR ResNet-56 as a timm model, so quality.py can fine-tune it as a *target*.

Same-architecture `centre` from the arm-2 checkpoint copies every body tensor exactly: the ceiling of what
any transfer from this source can give a ResNet-56 on the arm-2 tasks.
"""
from timm.models import register_model
from torch import nn

from benchmarks.cifar_resnet import CifarResNet


class CifarResNet56(CifarResNet):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(9, num_classes)
        self.pretrained_cfg = {"classifier": "linear", "first_conv": "conv1", "input_size": (3, 32, 32)}

    def get_classifier(self) -> nn.Module:
        return self.linear


@register_model
def cifar_resnet56(pretrained: bool = False, num_classes: int = 10, **kwargs) -> CifarResNet56:
    return CifarResNet56(num_classes=num_classes)
