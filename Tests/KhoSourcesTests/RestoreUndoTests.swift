import Testing
import KhoSupport
@testable import KhoSources

@Suite("undoing a failed restore")
struct RestoreUndoTests {
    @Test("what a failed restore could not remove is named in its error, with what to do; the error's kind and retry stay")
    func leftoversAreNamed() {
        var undo = RestoreUndo()
        undo.attempt("database ho_tich__kho_restore_7") { throw KhoError(.source, "connection lost") }
        undo.attempt("role app_owner") {}
        let original = KhoError(.source, "Source ho-tich: psql stopped at line 12.", retryable: true)
        let error = undo.error(original) as? KhoError
        #expect(error?.kind == .source && error?.retryable == true)
        #expect(error?.message == "Source ho-tich: psql stopped at line 12. kho could not remove what this restore created: database ho_tich__kho_restore_7 (connection lost); drop it by hand before restoring again.")
    }

    @Test("when everything was undone, the restore's own error is reported unchanged")
    func nothingLeft() {
        var undo = RestoreUndo()
        undo.attempt("database x") {}
        let original = KhoError(.usage, "refused")
        #expect(undo.error(original) as? KhoError == original)
    }
}
