import Foundation
import KhoSupport

/// Drill evidence kept in the repository (`drills/`, docs/FORMAT.md section 19.5): the catalog on
/// the backup host is the record status and reports read, but a catalog can be lost, and with it
/// the proof that restores were tested. Each drill also saves its evidence here, sealed like a
/// snapshot, and `kho catalog rebuild` reads it back. The engine does not read the JSON: its shape
/// belongs to the drill (KhoCatalog's `DrillEvidence`).
extension Repository {
    /// Saves one drill's evidence (its JSON, exactly as the catalog stores it) as a sealed file named
    /// by its SHA-256, and returns that name. A failure is thrown: evidence that was not stored
    /// cannot be rebuilt.
    @discardableResult
    public func saveDrillEvidence(_ json: [UInt8]) throws -> String {
        try saveSealed(json, kind: .drill).hex
    }

    /// Every drill evidence file the repository holds: its name and its JSON. A file that does not
    /// authenticate is an integrity error (it cannot be told from evidence someone altered).
    public func drillEvidenceFiles() throws -> [(name: String, json: [UInt8])] {
        try storage.list(.drill).map { file in (file.name, try loadSealed(Handle(.drill, file.name))) }
    }
}
