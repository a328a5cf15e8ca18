-- The agency database of scripts/bench: a provincial civil registry and document office in
-- Quảng Ngãi. Generated in SQL (set-based, fast), deterministic for a given scale (setseed).
-- psql variable: scale (1 gives a plain pg_dump of about 550 MB).

SELECT setseed(0.2026) AS seed \gset
SELECT greatest(1, (700000 * :scale)::int) AS n_citizens,
       greatest(1, (50000 * :scale)::int) AS n_documents,
       greatest(1, (4000 * :scale)::int) AS n_attachments \gset

CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- Word lists: one row of arrays.
CREATE TABLE ref_lists AS SELECT
  ARRAY[
  'Nguyễn','Nguyễn','Nguyễn','Trần','Trần','Lê','Lê','Phạm','Huỳnh','Hoàng','Phan','Võ','Võ','Đặng',
  'Bùi','Đỗ','Hồ','Ngô','Dương','Lý','Đoàn','Trương','Đinh','Lương','Tạ','Châu','Mai','Tô']::text[] AS family,
  ARRAY[
  'Văn','Thị','Minh','Ngọc','Quang','Thanh','Hữu','Đức','Thu','Hoài','Xuân','Kim','Công','Bảo','Gia','Phương']::text[] AS middle,
  ARRAY[
  'An','Bình','Châu','Dũng','Hà','Khánh','Lan','Phúc','Hùng','Tuấn','Hương','Trang','Nam','Sơn','Linh',
  'Hải','Long','Thảo','Vy','Quân','Nhung','Toàn','Yến','Đạt','Hiếu','Tâm','Thịnh','Trinh','Uyên','Vinh',
  'Lộc','Nghĩa','Phong','Quỳnh','Thắng','Tú']::text[] AS given,
  ARRAY[
  'thành phố Quảng Ngãi','huyện Bình Sơn','huyện Sơn Tịnh','huyện Tư Nghĩa','huyện Nghĩa Hành',
  'huyện Mộ Đức','thị xã Đức Phổ','huyện Ba Tơ','huyện Minh Long','huyện Sơn Hà','huyện Sơn Tây',
  'huyện Trà Bồng','huyện Lý Sơn']::text[] AS district,
  ARRAY[
  'xã Nghĩa Kỳ','xã Tịnh Hà','xã Bình Châu','xã Nghĩa Điền','xã Đức Lân','phường Phổ Minh','xã Hành Thuận',
  'xã An Vĩnh','phường Trần Phú','phường Lê Hồng Phong','xã Tịnh Khê','xã Bình Hải','xã Đức Thạnh',
  'xã Ba Động','xã Long Hiệp','xã Sơn Kỳ','xã Trà Phong','xã Nghĩa Hà','xã Hành Tín Đông','phường Nghĩa Chánh']::text[] AS commune,
  ARRAY[
  'Quang Trung','Hùng Vương','Lê Lợi','Phan Đình Phùng','Nguyễn Nghiêm','Trần Hưng Đạo','Hai Bà Trưng',
  'Phạm Văn Đồng','Lê Trung Đình','Nguyễn Du','Bà Triệu','Trương Định']::text[] AS street,
  ARRAY[
  'Căn cứ Luật Tổ chức chính quyền địa phương ngày 19 tháng 6 năm 2015; Luật sửa đổi, bổ sung một số điều của Luật Tổ chức Chính phủ và Luật Tổ chức chính quyền địa phương ngày 22 tháng 11 năm 2019;',
  'Căn cứ Nghị định số 123/2015/NĐ-CP ngày 15 tháng 11 năm 2015 của Chính phủ quy định chi tiết một số điều và biện pháp thi hành Luật Hộ tịch;',
  'Căn cứ Quyết định số %s/QĐ-UBND ngày %s của Ủy ban nhân dân tỉnh Quảng Ngãi về việc ban hành Quy chế quản lý, vận hành cơ sở dữ liệu hộ tịch điện tử;',
  'Theo đề nghị của Giám đốc Sở Tư pháp tại Tờ trình số %s/TTr-STP ngày %s,',
  'Ủy ban nhân dân các huyện, thị xã, thành phố có trách nhiệm chỉ đạo Ủy ban nhân dân cấp xã rà soát, cập nhật đầy đủ, chính xác thông tin hộ tịch của công dân trên địa bàn vào cơ sở dữ liệu.',
  'Sở Thông tin và Truyền thông chủ trì, phối hợp với các cơ quan, đơn vị liên quan bảo đảm hạ tầng kỹ thuật, an toàn thông tin mạng cho hệ thống trong quá trình vận hành.',
  'Thời gian thực hiện: từ ngày %s đến hết ngày %s; định kỳ hằng tháng báo cáo kết quả về Ủy ban nhân dân tỉnh (qua Sở Tư pháp) trước ngày 25.',
  'Công dân %s, số định danh cá nhân %s, thường trú tại %s, đề nghị cấp bản sao trích lục khai sinh.',
  'Hồ sơ đã được tiếp nhận tại Bộ phận Một cửa và chuyển đến phòng chuyên môn thẩm định theo quy định; thời hạn giải quyết không quá 05 ngày làm việc.',
  'Trường hợp hồ sơ chưa đầy đủ, cán bộ tiếp nhận hướng dẫn công dân bổ sung một lần bằng văn bản, nêu rõ lý do và thành phần cần bổ sung.',
  'Việc sao lưu dữ liệu được thực hiện hằng ngày vào lúc 23 giờ 00; bản sao lưu được mã hóa và lưu trữ tại hai địa điểm khác nhau theo quy định.',
  'Định kỳ hằng quý, đơn vị vận hành tổ chức diễn tập khôi phục dữ liệu từ bản sao lưu và lập biên bản kết quả, gửi Sở Thông tin và Truyền thông để theo dõi.',
  'Kinh phí thực hiện được bố trí từ nguồn ngân sách nhà nước theo phân cấp hiện hành và các nguồn kinh phí hợp pháp khác (nếu có).',
  'Chánh Văn phòng Ủy ban nhân dân tỉnh, Giám đốc các Sở, Thủ trưởng các ban, ngành thuộc tỉnh, Chủ tịch Ủy ban nhân dân các huyện, thị xã, thành phố chịu trách nhiệm thi hành Quyết định này.',
  'Quyết định này có hiệu lực thi hành kể từ ngày ký; bãi bỏ Quyết định số %s/QĐ-UBND ngày %s của Ủy ban nhân dân tỉnh.',
  'Trong quá trình thực hiện, nếu có khó khăn, vướng mắc, các cơ quan, đơn vị kịp thời phản ánh về Sở Tư pháp để tổng hợp, báo cáo Ủy ban nhân dân tỉnh xem xét, giải quyết.',
  'Kết quả kiểm tra cho thấy %s hồ sơ đã được số hóa, đạt tỷ lệ %s phần trăm so với kế hoạch; còn %s hồ sơ đang được xử lý.',
  'Ông (bà) %s, sinh ngày %s, được giao nhiệm vụ theo dõi, đôn đốc việc thực hiện và tổng hợp báo cáo định kỳ.',
  'Nơi nhận: Như Điều 3; Bộ Tư pháp (b/c); Thường trực Tỉnh ủy; Thường trực HĐND tỉnh; CT, các PCT UBND tỉnh; VPUB: CVP, PCVP, CBTH; Lưu: VT, NC.',
  'Đề nghị Ủy ban nhân dân %s khẩn trương hoàn thành việc chuẩn hóa dữ liệu dân cư, bảo đảm thông tin "đúng, đủ, sạch, sống" theo yêu cầu của Đề án 06.']::text[] AS sentence;

CREATE TABLE citizens (
    id bigserial PRIMARY KEY,
    full_name text NOT NULL,
    gender text NOT NULL,
    born date NOT NULL,
    id_number char(12) NOT NULL,
    phone text,
    ethnicity text NOT NULL,
    district text NOT NULL,
    commune text NOT NULL,
    address text NOT NULL,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    doc_number text NOT NULL,
    doc_type text NOT NULL,
    issued_on date NOT NULL,
    issuer text NOT NULL,
    signer text NOT NULL,
    citizen_id bigint,
    subject text NOT NULL,
    body text NOT NULL,
    status text NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE attachments (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL,
    file_name text NOT NULL,
    mime_type text NOT NULL,
    sha256 text,
    created_at timestamptz NOT NULL,
    content bytea NOT NULL
);

-- A random name, address, body and attachment; used by the churn too. Arrays, not lookups: a
-- volatile random() in a WHERE clause would be drawn again for every row scanned.
CREATE FUNCTION bench_pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT a[1 + floor(random() * array_length(a, 1))::int]
$$;
CREATE FUNCTION bench_name() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT bench_pick(family) || ' ' || bench_pick(middle) || ' ' || bench_pick(given)
    FROM ref_lists
$$;
CREATE FUNCTION bench_address(d int, c int) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN random() < 0.4
        THEN 'Số ' || (1 + floor(random() * 400))::int || ' đường ' || bench_pick(street)
        ELSE 'Thôn ' || (1 + floor(random() * 14))::int END
        || ', ' || commune[1 + c] || ', ' || district[1 + d] || ', tỉnh Quảng Ngãi'
    FROM ref_lists
$$;
CREATE FUNCTION bench_fill(t text) RETURNS text LANGUAGE sql VOLATILE AS $$
    -- Fills the %s of a sentence with numbers, dates and names.
    SELECT CASE WHEN strpos(t, '%s') = 0 THEN t ELSE
        regexp_replace(regexp_replace(regexp_replace(regexp_replace(t,
        '%s', (1 + floor(random() * 2500))::int::text || '/' || (2015 + floor(random() * 11))::int),
        '%s', to_char(date '2015-01-01' + floor(random() * 4000)::int, 'DD/MM/YYYY')),
        '%s', bench_name()),
        '%s', (floor(random() * 100000))::int::text) END
$$;
CREATE FUNCTION bench_body(k int) RETURNS text LANGUAGE sql VOLATILE AS $$
    -- k paragraphs of 2 to 5 sentences each.
    SELECT string_agg(p, E'\n\n') FROM ref_lists l, LATERAL (
        SELECT (SELECT string_agg(bench_fill(bench_pick(l.sentence)), ' ' ORDER BY n)
                FROM generate_series(1, 2 + (floor(random() * 4))::int + 0 * g) AS n) AS p
        FROM generate_series(1, k) AS g) AS paragraphs
$$;
CREATE FUNCTION bench_content(n int) RETURNS bytea LANGUAGE sql VOLATILE AS $$
    -- About 80% scans and photos (random bytes: incompressible), 20% generated PDFs and text
    -- exports (compressible). n is the size in KiB.
    SELECT CASE WHEN random() < 0.8
        THEN (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, n) AS k)
        ELSE convert_to('%PDF-1.4' || E'\n' || (SELECT string_agg(
                 'BT /F1 11 Tf 56 ' || (800 - k % 60 * 12) || ' Td (' || bench_fill(bench_pick(l.sentence)) || ') Tj ET' || E'\n', '')
             FROM generate_series(1, greatest(1, n * 4)) AS k, ref_lists l), 'UTF8') END
$$;

INSERT INTO citizens (full_name, gender, born, id_number, phone, ethnicity, district, commune, address, registered_at, updated_at)
SELECT name, gender, born,
       -- CCCD: province code 051, century and gender digit, year of birth, six digits.
       '051' || (CASE WHEN gender = 'Nam' THEN 0 ELSE 1 END + CASE WHEN born >= date '2000-01-01' THEN 2 ELSE 0 END)
             || to_char(born, 'YY') || lpad((g % 1000000)::text, 6, '0'),
       CASE WHEN random() < 0.85 THEN '0' || (ARRAY['905','935','988','979','356','868','914','337'])[1 + floor(random() * 8)::int]
            || lpad(floor(random() * 1000000)::int::text, 6, '0') END,
       CASE WHEN d IN (7, 8, 9, 10, 11) AND random() < 0.6 THEN (ARRAY['Hrê','Cor','Ca Dong'])[1 + floor(random() * 3)::int] ELSE 'Kinh' END,
       (SELECT district[1 + d] FROM ref_lists), (SELECT commune[1 + c] FROM ref_lists),
       bench_address(d, c),
       reg, reg + floor(random() * 2000)::int * interval '1 day'
FROM (
    SELECT g, bench_name() AS name, CASE WHEN random() < 0.5 THEN 'Nam' ELSE 'Nữ' END AS gender,
           date '1930-01-01' + floor(random() * 34000)::int AS born,
           floor(random() * 13)::int AS d, floor(random() * 20)::int AS c,
           timestamptz '2016-01-01 07:30:00+07' + random() * interval '3000 days' AS reg
    FROM generate_series(1, :n_citizens) AS g
) AS c;

INSERT INTO documents (doc_number, doc_type, issued_on, issuer, signer, citizen_id, subject, body, status, updated_at)
SELECT num || '/' || (ARRAY['QĐ-UBND','CV-STP','TB-UBND','KH-UBND','BC-STTTT','TTr-STP'])[1 + t] ,
       (ARRAY['Quyết định','Công văn','Thông báo','Kế hoạch','Báo cáo','Tờ trình'])[1 + t],
       issued,
       (ARRAY['Ủy ban nhân dân tỉnh Quảng Ngãi','Sở Tư pháp','Sở Thông tin và Truyền thông','Ủy ban nhân dân huyện Bình Sơn','Công an tỉnh Quảng Ngãi'])[1 + floor(random() * 5)::int],
       bench_name(),
       CASE WHEN random() < 0.5 THEN 1 + floor(random() * :n_citizens)::bigint END,
       'V/v ' || (ARRAY['cấp bản sao trích lục hộ tịch','triển khai cơ sở dữ liệu hộ tịch điện tử',
                        'sao lưu và khôi phục dữ liệu','kiểm tra công tác cải cách hành chính',
                        'chuẩn hóa dữ liệu dân cư theo Đề án 06','bảo đảm an toàn hệ thống thông tin cấp độ 3'])[1 + floor(random() * 6)::int],
       bench_body(3 + floor(random() * 5)::int + 0 * g),
       (ARRAY['dự thảo','đã ký','đã ban hành','đã lưu trữ'])[1 + floor(random() * 4)::int],
       issued + interval '8 hours'
FROM (
    SELECT g, (1 + floor(random() * 3000))::int AS num, floor(random() * 6)::int AS t,
           date '2018-01-01' + floor(random() * 3000)::int AS issued
    FROM generate_series(1, :n_documents) AS g
) AS d;

INSERT INTO attachments (document_id, file_name, mime_type, created_at, content)
SELECT 1 + floor(random() * :n_documents)::bigint,
       'scan-' || g || '.pdf', 'application/pdf',
       timestamptz '2018-01-01 08:00:00+07' + random() * interval '3000 days',
       bench_content((4 + floor(random() * random() * 90))::int + 0 * g)
FROM generate_series(1, :n_attachments) AS g;
UPDATE attachments SET sha256 = encode(digest(content, 'sha256'), 'hex');

CREATE INDEX citizens_id_number ON citizens (id_number);
CREATE INDEX documents_citizen ON documents (citizen_id);
CREATE INDEX attachments_document ON attachments (document_id);
VACUUM ANALYZE;
