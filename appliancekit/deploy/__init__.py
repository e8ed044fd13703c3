"""`appliancekit deploy`: bring a cloud's EC2 members to the state the cloud file describes.

The NixOps role, in three steps with one job each:

- `target.py`: what each member should be (its verified image, instance type, the ports its
  recipe declares, its per-device settings as user-data, its data volume's size);
- `plan.py`: what is there now against what should be, as a list of actions (a pure
  function, shown before anything changes and all `--dry-run` does);
- `ec2.py`: reading what is there (tags `appliancekit:cloud` / `appliancekit:member`) and
  carrying the actions out through boto3.

A member's state lives on its own EBS data volume, created once and kept: when the image
changes, the instance is replaced and the volume moves to the new one, whose initramfs
finds it by its volume id (the `data_volume` setting, the NVMe serial EBS gives it).
"""
