# Test template: a string variable written to a file on the instance, as Packer passed it.
variable "ssh_host" { type = string }
variable "ssh_port" { type = number }
variable "ssh_username" { type = string }
variable "ssh_private_key_file" { type = string }
variable "value" { type = string }
variable "values" {
  type    = list(string)
  default = []
}

source "null" "t" {
  communicator         = "ssh"
  ssh_host             = var.ssh_host
  ssh_port             = var.ssh_port
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
}

build {
  sources = ["source.null.t"]
  provisioner "shell" {
    environment_vars = ["VALUE=${var.value}", "VALUES=${join("|", var.values)}"]
    inline           = ["printf '%s' \"$VALUE\" > /tmp/packer-value", "printf '%s' \"$VALUES\" > /tmp/packer-values"]
  }
}
