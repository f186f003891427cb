# A Packer template the tests build against the stand-in WinRM host (tests/windows/winrm_server.py):
# the null builder with the winrm communicator over HTTPS, a powershell and a windows-restart
# provisioner. HCL2 that Packer 1.6.6 and current Packer accept.

variable "winrm_host" {
  type = string
}

variable "winrm_port" {
  type    = number
  default = 5986
}

variable "winrm_username" {
  type    = string
  default = "Administrator"
}

variable "winrm_password" {
  type      = string
  sensitive = true
}

variable "winrm_timeout" {
  type    = string
  default = "5m"
}

source "null" "windows" {
  communicator   = "winrm"
  winrm_host     = var.winrm_host
  winrm_port     = var.winrm_port
  winrm_username = var.winrm_username
  winrm_password = var.winrm_password
  winrm_use_ssl  = true
  winrm_insecure = false
  winrm_timeout  = var.winrm_timeout
}

build {
  sources = ["source.null.windows"]

  provisioner "powershell" {
    inline = [
      "Write-Output 'golden: hello from the build'",
      "Set-ItemProperty -Path 'HKLM:\\SOFTWARE\\Golden' -Name Stage -Value 'baked'",
    ]
  }

  provisioner "windows-restart" {
    restart_timeout = "2m"
  }
}
