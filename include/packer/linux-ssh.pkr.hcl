# One generic Linux template for every platform: Packer's `null` builder over SSH to the builder
# instance the pipeline launched (a local chroot instance or an EC2 instance). Written in the HCL2
# subset that both Packer 1.6.6 (Debian) and current Packer accept: no required_plugins, no data
# blocks, no templatefile().

variable "ssh_host" {
  type        = string
  description = "Address of the builder instance (set by the pipeline)."
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "ssh_username" {
  type    = string
  default = "root"
}

variable "ssh_private_key_file" {
  type        = string
  description = "Ephemeral key of the builder instance (set by the pipeline)."
}

variable "become" {
  type        = bool
  default     = false
  description = "Run scripts through passwordless sudo (set by the pipeline: cloud images log in as admin / ec2-user)."
}

variable "update_policy" {
  type        = string
  default     = "all"
  description = "security: apply only security updates; all: dist-upgrade."
}

variable "packages" {
  type        = list(string)
  default     = []
  description = "Extra Debian packages to install before Ansible runs."
}

variable "family" {
  type    = string
  default = "unknown"
}

source "null" "builder" {
  communicator         = "ssh"
  ssh_host             = var.ssh_host
  ssh_port             = var.ssh_port
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "2m"
}

build {
  sources = ["source.null.builder"]

  provisioner "shell" {
    environment_vars = [
      "UPDATE_POLICY=${var.update_policy}",
      "EXTRA_PACKAGES=${join(" ", var.packages)}",
      "GOLDEN_FAMILY=${var.family}",
    ]
    # cloud images log in as a sudo user (admin, ec2-user); local instances as root
    execute_command = var.become ? "chmod +x {{ .Path }}; sudo -n -E env {{ .Vars }} {{ .Path }}" : "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}"
    script          = "${path.root}/scripts/apt-upgrade.sh"
  }
}
