"""Fan-out of one long file over many workers: plan (chunk ranges), shards (segmentation + embeddings per range),
reduce (clustering + reconstruction over all of them). Core: no AWS import."""
