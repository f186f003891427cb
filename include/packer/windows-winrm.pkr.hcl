# One generic Windows template: Packer's `null` builder over WinRM/HTTPS to the Windows builder
# instance the pipeline launched on EC2, installing Windows updates in rounds (each followed by
# a reboot when one is needed) until none are left. Written in the HCL2 subset that both Packer
# 1.6.6 (Debian) and current Packer accept: no required_plugins (null, winrm, powershell and
# windows-restart are built in), no data blocks, no templatefile().
#
# TLS: winrm_insecure = false. The instance's self-signed certificate (made by user data) is the
# only CA Packer trusts: the pipeline pins its SHA-256 from the console output and runs Packer
# with SSL_CERT_FILE pointing at a private PEM of it (Packer 1.6.6 has no CA option; Go honours
# SSL_CERT_FILE). The password is EC2's GetPasswordData for this run; it is never in this file.

variable "winrm_host" {
  type        = string
  description = "Address of the builder instance (set by the pipeline)."
}

variable "winrm_port" {
  type        = number
  default     = 5986
  description = "WinRM over HTTPS (set by the pipeline; 5986, or the local end of an SSM tunnel)."
}

variable "winrm_username" {
  type        = string
  default     = "Administrator"
  description = "Set by the pipeline: the account EC2Launch sets a password for."
}

variable "winrm_password" {
  type        = string
  sensitive   = true
  description = "Set by the pipeline for this run only (EC2 GetPasswordData); never written in a family file."
}

variable "update_policy" {
  type        = string
  default     = "all"
  description = "security: only updates with an MSRC severity or in Security/Critical Updates; all: every software update."
}

variable "update_rounds" {
  type        = number
  default     = 5
  description = "Install rounds (1 to 5; the template has five): Windows offers some updates only after others are installed and the machine restarted."
}

variable "family" {
  type    = string
  default = "unknown"
}

source "null" "builder" {
  communicator   = "winrm"
  winrm_host     = var.winrm_host
  winrm_port     = var.winrm_port
  winrm_username = var.winrm_username
  winrm_password = var.winrm_password
  winrm_use_ssl  = true
  winrm_insecure = false
  winrm_use_ntlm = false
  winrm_timeout  = "45m"
}

# The rounds are written out: Packer 1.6.6's HCL2 has no dynamic or repeated provisioners.
# Each round: search, download and install through the Windows Update Agent API, as an elevated
# scheduled task (elevated_user: the WUA API refuses to download or install in a WinRM network
# logon). Exit 3010 = installed, a reboot is needed: the script leaves a marker file and the
# windows-restart after it reboots only then. The final round installs nothing: it fails the
# build when updates (of the policy) are still pending or a reboot still is.
build {
  sources = ["source.null.builder"]

  provisioner "powershell" {
    elevated_user     = var.winrm_username
    elevated_password = var.winrm_password
    environment_vars  = ["UPDATE_POLICY=${var.update_policy}", "GOLDEN_UPDATE_MODE=install", "GOLDEN_UPDATE_ROUND=1", "GOLDEN_UPDATE_ROUNDS=${var.update_rounds}", "GOLDEN_FAMILY=${var.family}"]
    script            = "${path.root}/scripts/windows-update.ps1"
    valid_exit_codes  = [0, 3010]
  }

  provisioner "windows-restart" {
    restart_command       = "cmd /c if exist %SystemRoot%\\Temp\\golden-reboot-required (del /f /q %SystemRoot%\\Temp\\golden-reboot-required & shutdown /r /f /t 5 /c \"golden-update: reboot after Windows updates\") else (echo golden-update: no reboot needed)"
    restart_timeout       = "45m"
    restart_check_command = "powershell -NoProfile -Command \"Write-Output 'golden-update: back after restart'\""
  }

  provisioner "powershell" {
    elevated_user     = var.winrm_username
    elevated_password = var.winrm_password
    environment_vars  = ["UPDATE_POLICY=${var.update_policy}", "GOLDEN_UPDATE_MODE=install", "GOLDEN_UPDATE_ROUND=2", "GOLDEN_UPDATE_ROUNDS=${var.update_rounds}", "GOLDEN_FAMILY=${var.family}"]
    script            = "${path.root}/scripts/windows-update.ps1"
    valid_exit_codes  = [0, 3010]
  }

  provisioner "windows-restart" {
    restart_command       = "cmd /c if exist %SystemRoot%\\Temp\\golden-reboot-required (del /f /q %SystemRoot%\\Temp\\golden-reboot-required & shutdown /r /f /t 5 /c \"golden-update: reboot after Windows updates\") else (echo golden-update: no reboot needed)"
    restart_timeout       = "45m"
    restart_check_command = "powershell -NoProfile -Command \"Write-Output 'golden-update: back after restart'\""
  }

  provisioner "powershell" {
    elevated_user     = var.winrm_username
    elevated_password = var.winrm_password
    environment_vars  = ["UPDATE_POLICY=${var.update_policy}", "GOLDEN_UPDATE_MODE=install", "GOLDEN_UPDATE_ROUND=3", "GOLDEN_UPDATE_ROUNDS=${var.update_rounds}", "GOLDEN_FAMILY=${var.family}"]
    script            = "${path.root}/scripts/windows-update.ps1"
    valid_exit_codes  = [0, 3010]
  }

  provisioner "windows-restart" {
    restart_command       = "cmd /c if exist %SystemRoot%\\Temp\\golden-reboot-required (del /f /q %SystemRoot%\\Temp\\golden-reboot-required & shutdown /r /f /t 5 /c \"golden-update: reboot after Windows updates\") else (echo golden-update: no reboot needed)"
    restart_timeout       = "45m"
    restart_check_command = "powershell -NoProfile -Command \"Write-Output 'golden-update: back after restart'\""
  }

  provisioner "powershell" {
    elevated_user     = var.winrm_username
    elevated_password = var.winrm_password
    environment_vars  = ["UPDATE_POLICY=${var.update_policy}", "GOLDEN_UPDATE_MODE=install", "GOLDEN_UPDATE_ROUND=4", "GOLDEN_UPDATE_ROUNDS=${var.update_rounds}", "GOLDEN_FAMILY=${var.family}"]
    script            = "${path.root}/scripts/windows-update.ps1"
    valid_exit_codes  = [0, 3010]
  }

  provisioner "windows-restart" {
    restart_command       = "cmd /c if exist %SystemRoot%\\Temp\\golden-reboot-required (del /f /q %SystemRoot%\\Temp\\golden-reboot-required & shutdown /r /f /t 5 /c \"golden-update: reboot after Windows updates\") else (echo golden-update: no reboot needed)"
    restart_timeout       = "45m"
    restart_check_command = "powershell -NoProfile -Command \"Write-Output 'golden-update: back after restart'\""
  }

  provisioner "powershell" {
    elevated_user     = var.winrm_username
    elevated_password = var.winrm_password
    environment_vars  = ["UPDATE_POLICY=${var.update_policy}", "GOLDEN_UPDATE_MODE=install", "GOLDEN_UPDATE_ROUND=5", "GOLDEN_UPDATE_ROUNDS=${var.update_rounds}", "GOLDEN_FAMILY=${var.family}"]
    script            = "${path.root}/scripts/windows-update.ps1"
    valid_exit_codes  = [0, 3010]
  }

  provisioner "windows-restart" {
    restart_command       = "cmd /c if exist %SystemRoot%\\Temp\\golden-reboot-required (del /f /q %SystemRoot%\\Temp\\golden-reboot-required & shutdown /r /f /t 5 /c \"golden-update: reboot after Windows updates\") else (echo golden-update: no reboot needed)"
    restart_timeout       = "45m"
    restart_check_command = "powershell -NoProfile -Command \"Write-Output 'golden-update: back after restart'\""
  }

  # until none are left: updates of the policy still pending (or a reboot still pending) fail the build
  provisioner "powershell" {
    elevated_user     = var.winrm_username
    elevated_password = var.winrm_password
    environment_vars  = ["UPDATE_POLICY=${var.update_policy}", "GOLDEN_UPDATE_MODE=verify", "GOLDEN_UPDATE_ROUND=6", "GOLDEN_UPDATE_ROUNDS=${var.update_rounds}", "GOLDEN_FAMILY=${var.family}"]
    script            = "${path.root}/scripts/windows-update.ps1"
  }
}
