# Test template: one inline shell step whose command the test chooses.
variable "ssh_host" { type = string }
variable "ssh_port" { type = number }
variable "ssh_username" { type = string }
variable "ssh_private_key_file" { type = string }
variable "command" { type = string }
variable "become" {
  type    = bool
  default = false
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
    inline          = [var.command]
    execute_command = var.become ? "chmod +x {{ .Path }}; sudo -n -E env {{ .Vars }} {{ .Path }}" : "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}"
  }
}
