"""Golden-image pipeline: image families as code, baked by Airflow, Packer and Ansible."""
