import BatonCore

/// The errors `yaml` (a whole config file, read as `test.yaml`) produces, as
/// `file:line:column: keyPath: message` lines; empty when it is valid.
func configErrorLines(_ yaml: String) -> [String] {
    do {
        _ = try BatonConfig.parse(yaml: yaml, file: "test.yaml")
        return []
    } catch {
        return error.errors.map(\.description)
    }
}
