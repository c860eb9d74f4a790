"""Many images at once on Dask: ``bmap batch`` (:mod:`bmap.fleet.batch`) maps each image (or
set of images that form one machine) in a worker and writes one Parquet dataset, partitioned
by image, with a table of the images."""
