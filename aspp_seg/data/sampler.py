"""A distributed sampler for evaluation that counts every image exactly once.

`torch.utils.data.DistributedSampler` (which Lightning puts under every data loader
in DDP) pads the index list to a multiple of the number of processes: on 3 GPUs the
500 Cityscapes val images become 501, and one image enters the summed confusion matrix
twice. This sampler gives the ranks shards of uneven length instead. It subclasses
DistributedSampler so that Lightning keeps it as it is rather than wrapping it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank r reads indices r, r + R, r + 2R, ... of the data set, in order, no padding.

    Args:
        dataset: the data set (only its length is used).
        num_replicas: number of processes R.
        rank: this process's rank r in 0..R-1.
    """

    def __init__(self, dataset: Sized, *, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
