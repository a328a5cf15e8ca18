import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct ScheduleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "Install the timer that runs `kho run --due` every few minutes.",
        subcommands: [Install.self]
    )

    struct Install: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "install", abstract: "Write a systemd service and timer (default) or a cron.d entry.")

        @Flag(help: "A systemd service and timer (the default).") var systemd = false
        @Flag(help: "A file in /etc/cron.d.") var cron = false
        @Option(help: "How often the timer checks for due jobs, in minutes.") var every = 5
        @Option(help: "Write below this root instead of / (for packaging and tests).") var root = "/"
        @OptionGroup var orchestration: OrchestrationOptions
        @Flag(name: .customLong("dry-run"), help: "Print the files instead of writing them.") var dryRun = false

        /// `path` as one word for /bin/sh and for systemd's ExecStart.
        static func quoted(_ path: String) -> String {
            let plain = path.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "/._-+,:@=".unicodeScalars.contains($0) }
            return plain && !path.isEmpty ? path : "'" + path.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }

        func validate() throws {
            if systemd && cron { throw ValidationError("Give --systemd or --cron, not both.") }
            if !(1...60).contains(every) { throw ValidationError("--every must be 1 to 60 minutes.") }
        }

        func run() throws {
            // Absolute paths (cron and systemd do not start in this folder), quoted when they hold
            // spaces or other characters the shell or systemd would split or interpret.
            let binary = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
            let policies = URL(fileURLWithPath: orchestration.policyDirectory).standardizedFileURL.path
            let state = URL(fileURLWithPath: orchestration.stateDirectory).standardizedFileURL.path
            let command = "\(Install.quoted(binary)) run --due --policies \(Install.quoted(policies)) --state-dir \(Install.quoted(state))"
                + " --metrics-file \(Install.quoted(state + "/kho.prom"))"
            var files: [(String, String)] = []
            if cron {
                files.append(("etc/cron.d/kho", """
                    # kho: run the backup policies that are due (written by `kho schedule install --cron`)
                    SHELL=/bin/sh
                    PATH=/usr/local/bin:/usr/bin:/bin
                    */\(every) * * * * root \(command) >>/var/log/kho.log 2>&1

                    """))
            } else {
                files.append(("etc/systemd/system/kho-run.service", """
                    [Unit]
                    Description=kho: run the backup policies that are due
                    After=network-online.target

                    [Service]
                    Type=oneshot
                    ExecStart=\(command)
                    Nice=10
                    IOSchedulingClass=best-effort
                    IOSchedulingPriority=7

                    """))
                files.append(("etc/systemd/system/kho-run.timer", """
                    [Unit]
                    Description=kho: check for due backups every \(every) minutes

                    [Timer]
                    OnCalendar=*:0/\(every)
                    Persistent=true

                    [Install]
                    WantedBy=timers.target

                    """))
            }
            for (path, text) in files {
                let full = (root as NSString).appendingPathComponent(path)
                if dryRun {
                    Terminal.out("# \(full)\n\(text)")
                    continue
                }
                try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                guard FileManager.default.createFile(atPath: full, contents: Data(text.utf8)) else {
                    throw KhoError(.failure, "Cannot write \(full): run as root or give --root.")
                }
                Terminal.out("wrote \(full)")
            }
            if !dryRun && !cron && root == "/" {
                Terminal.out("now run: systemctl daemon-reload && systemctl enable --now kho-run.timer")
            }
        }
    }
}
